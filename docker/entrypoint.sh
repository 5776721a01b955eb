#!/bin/sh
# Start sshd in the foreground. The public key(s) allowed to log in as root come from a file mounted
# (or copied) at /authorized_keys, or from /root/.ssh/authorized_keys already in the image. The mounted
# file is copied, not used in place: sshd refuses a key file owned by another user, which a file
# mounted from the host often is.
set -eu
if [ -f /authorized_keys ]; then
    install -m 600 -o root -g root /authorized_keys /root/.ssh/authorized_keys
fi
if [ ! -s /root/.ssh/authorized_keys ]; then
    echo "clusterctl-node: no public key: mount one at /authorized_keys (see docker/compose.yaml)" >&2
    exit 1
fi
mkdir -p /run/sshd  # sshd's privilege separation folder; /run may be a fresh tmpfs
ssh-keygen -A >/dev/null
exec /usr/sbin/sshd -D -e

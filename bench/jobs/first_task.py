"""Bench job: returns the wall-clock time at which its first task ran on a worker."""

import time


def stamp(_):
    return time.time()


def run(client) -> dict:
    return {"first_task_at": client.submit(stamp, 0, pure=False).result()}

"""A module without a run() function: submit must refuse it."""

VALUE = 1

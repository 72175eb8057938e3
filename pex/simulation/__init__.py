"""Scheduling quality on a workload: a trace generator, the Haizea-style workload format,
provider strategies to compare, and a simulation whose clock jumps from one request to the
next, so that months of reservations run in seconds through the real application."""

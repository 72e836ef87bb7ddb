"""The serving engine: a Scheduler that decides (admission, queue order, sub-network, batches),
an Executor that only computes on the one model thread, and the Engine loop that joins them."""

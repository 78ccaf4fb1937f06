"""What the CLI prints while and after a run: the progress line or plain lines, the tally behind
them, the closing summary, the "Next:" commands, and the coordinator's view of several workers."""

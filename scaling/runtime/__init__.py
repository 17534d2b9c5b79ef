"""What runs inside a rank: the training loops, their timing, recording, events and measurements."""

"""Penguin Classification API: tells which penguin species is in a photo."""

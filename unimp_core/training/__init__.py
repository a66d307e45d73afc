"""Training: collator, loss, optimizer and schedules, sample datasets (the loop lives beside them)."""

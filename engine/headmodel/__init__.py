"""Head models: the HeadModel interface, OpenHead (ours, default) and user-supplied FLAME."""

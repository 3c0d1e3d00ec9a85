"""pytest plugin (entry point pytest11): the akfak_broker fixtures."""

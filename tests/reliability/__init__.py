"""Reliability: what Seqbridge promises under bad input, faults and pressure, each bounded in time."""

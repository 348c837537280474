"""The kinds of schedule events and their integer codes (events.py describes each kind).

A module of its own so that the analysis reads the codes without importing the Schedule.
"""
KINDS = ("start", "arrive", "sync", "send", "gps_apply", "merge", "stop")
START, ARRIVE, SYNC, SEND, GPS_APPLY, MERGE, STOP = range(len(KINDS))
KIND_CODE = {k: i for i, k in enumerate(KINDS)}

"""`samaudio eval`: the official evaluation (SAM-Audio-Bench settings, the Judge, Aesthetics, CLAP, ImageBind),
plus SI-SDR / SDR where references exist, in this process or through a samaudio server, on one process or many.

Modules: `settings` (the official settings as data), `data` (the local item layout), `metrics` (each loaded on
request), `separators` (in-process; a server's is the thin client's `samaudio_client.evaluation`), `runner`
(rows, resumption, aggregation, outputs), `cli`.
Importing this package imports no torch; the modules that compute do.
"""

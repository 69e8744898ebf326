"""A re-runnable bad-input harness: every case is a real `python -m stages.<stage> …` (or `pifs …`)
subprocess on a fresh copy of a small smoke project, classified from evidence.

    python -m benchmarks.bad_inputs [--jobs 2] [--only TEXT ...] [--category NAME ...] [--list]

Outcomes: one clear line (exit != 0, one stderr line `error: <what> — <fix>` naming the key or file),
clear after other lines (a traceback or other lines first), raw (the key or file is never named), fine
(exit 0 and the result checks out), silently wrong (exit 0, and a clean run of the asked config, the
files themselves or their records say otherwise), data lost (a file the run did not make is gone or
changed, from byte hashes of the whole project before and after), hang (past the case's time limit).
Prints one line per case, the tally by outcome, by category and the failing cases by whose fix they
wait on, then one JSON line with the counts. Exit status 1 while any case fails its expectation.
"""

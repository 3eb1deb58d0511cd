"""The wheel tools as a library: one module per stage of the data path, with thin command-line
front ends in scripts/ (scripts/matrix.py, build_wheel.py, check_wheel.py, ...).

rows and rules (matrix) -> host detection (host) -> plan and build (build) -> repair (repair)
-> inspect (inspect, binaries, fatbin) -> validate (validate) -> manifest and index (index)
-> publish (publish). A module imports only modules before it in that order (and tools, which
finds external programs), so there are no import circles.
"""

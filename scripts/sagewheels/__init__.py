"""The wheel tools as a library, one module per stage of the data path, with thin command-line
front ends in scripts/ (matrix.py, build_wheel.py, check_wheel.py, fatbin.py, tools.py, ...):

    matrix   rows of build_matrix.yaml checked against scripts/compat_rules.yaml
    host     this machine: platform, its own row, why it cannot build another row
    build    plan (environment, tools, commands) and build of one row's wheel
    repair   auditwheel / delvewheel commands, torch's and CUDA's libraries excluded
    fatbin, binaries, check
             inspect a built wheel: GPU code, linked libraries, tags, RECORD, metadata
    validate run a wheel on a GPU against an fp64 reference
    matching, index
             which wheel fits a machine; SHA256SUMS, manifest.json, the pip index site
    publish  upload a release folder to GitHub Releases

`tools` finds the external programs for all of them. No import circles
(tests/test_layout.py): host detection lives in `host`, which both `build` and `check` read;
`build` runs `check` on the wheel it built, and `check` never imports `build`.
"""

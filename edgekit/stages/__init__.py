"""The stages of a run, in the order pipeline.py runs them, and the modules only they use.

    1 data      loading.py                   recipe -> validated; each task's examples loaded and split
    2 teacher   teacher.py                   the teacher with its heads; its files made, scored and timed
    3 probe     students.py, probe.py        candidate architectures, each timed untrained
    4 distill   distill/                     the feasible ones trained against the teacher's outputs
    5 evaluate  measure.py                   each student exported (parity), quantized, scored on every task
    6 time      measure.py                   every student file, in interleaved rounds, model only and end to end
    7 select    fits.py, select.py, gap.py   Pareto frontier and pick per provider; where the pick loses
              score_scale.py, report.py, plot.py, bundle.py, layouts.py, app_clients.py
                                             what a run writes: report.json/.md/.html and the bundle

Each stage takes its input, the run's Lab (edgekit/lab.py) and the part of the recipe it needs, and returns
its result. No stage imports a later one (tests/test_layers.py).
"""

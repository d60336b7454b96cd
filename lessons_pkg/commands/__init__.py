"""The commands of the course: ``python -m lessons_pkg.<name>``, each a module with a ``main``.

They sit above everything else: a command imports the library (the primitives, the models and
the experiment layer: :mod:`lessons_pkg.recipes`, :mod:`lessons_pkg.evaluation`,
:mod:`lessons_pkg.training`, ...), and nothing in the library imports a command
(tests/test_architecture.py holds it). The names the book and the README use run them::

    python -m lessons_pkg.checkpoints NAME      -> commands/checkpoints.py
    python -m lessons_pkg.train NAME --out DIR  -> commands/train.py
    python -m lessons_pkg.evaluate NAME ...     -> commands/evaluate.py
    python -m lessons_pkg.pretrain              -> commands/pretrain.py
    python -m lessons_pkg.ablations NAME        -> commands/ablations.py
    python -m lessons_pkg.detector_speed        -> commands/detector_speed.py
    python -m lessons_pkg.bench ops             -> commands/bench.py
    python -m lessons_pkg.figures DIR           -> commands/figures.py
    python -m lessons_pkg.train.throughput      -> commands/throughput.py
    python -m lessons_pkg.data export DIR       -> commands/data_export.py
"""

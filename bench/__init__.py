"""utcp benchmark suite: ``python -m bench --help``.

Each scenario lives in a ``bench.s_*`` module and is registered in
:mod:`bench.scenarios`; :mod:`bench.runner` runs them round-robin (every
scenario once per round, ``--repeat`` rounds) so that ratios between two
scenarios can be computed run by run, prints one table and writes JSON.
"""

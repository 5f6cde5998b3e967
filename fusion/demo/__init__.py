"""``fusion demo``: the whole loop on one machine. :mod:`.cli` parses the flags, :mod:`.run` drives the phases,
:mod:`.stages` starts and watches the processes, :mod:`.quality` counts data quality, :mod:`.report` prints the
summary (one-way: cli -> run -> stages, quality, report)."""

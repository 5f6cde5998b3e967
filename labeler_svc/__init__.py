"""Hindsight labels: rewards per horizon and action once a state's future (or its market's settlement) is known."""

"""``python -m drdpgan anonymize|recover IN OUT``: see :mod:`drdpgan.cli`."""

from .cli import main

raise SystemExit(main())

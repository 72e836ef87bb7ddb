"""`python -m models.cli`: the model commands without the web stack."""

from models.cli.main import main

raise SystemExit(main())

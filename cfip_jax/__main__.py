"""``python -m cfip_jax``: the command line (:mod:`cfip_jax.cli`)."""

from cfip_jax.cli import main

raise SystemExit(main())

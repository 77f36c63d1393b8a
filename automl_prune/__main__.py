"""``python -m automl_prune`` runs the CLI."""

from automl_prune.cli import main

main()

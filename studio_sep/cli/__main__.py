from studio_sep.cli.app import app

app()

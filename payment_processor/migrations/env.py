from eventstore.migrate import run_env

run_env()

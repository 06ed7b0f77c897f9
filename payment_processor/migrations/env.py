from infra.migrate import run_env

run_env()

# twistd -ny akfak.tac
# Configured from the environment: AKFAK_CONFIG (a server.properties), AKFAK_DATA_DIR,
# AKFAK_LISTEN (endpoint strings), AKFAK_OVERRIDE (key=value ...), AKFAK_STORAGE.
from akfak.service import makeApplication
from akfak.tap import config_from_environment

application = makeApplication(config_from_environment())

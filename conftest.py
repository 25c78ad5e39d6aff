import os

# Tests run with HERMES_ENV=test unless the caller says otherwise (hermes_site.testrun sets it too).
os.environ.setdefault("HERMES_ENV", "test")

"""``python -m mailappliance``: patch with gevent first, then run the appliance."""
from gevent import monkey

monkey.patch_all()

import sys  # noqa: E402

from mailappliance.app import main  # noqa: E402

sys.exit(main(sys.argv[1:]))

"""The ASGI application served by uvicorn (`python -m admin`)."""

import os
import warnings

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "admin.settings")
# whitenoise streams static files with a sync iterator; Django warns and then serves it fine.
warnings.filterwarnings("ignore", message="StreamingHttpResponse must consume synchronous iterators")

application = get_asgi_application()

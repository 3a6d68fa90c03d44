"""Serving: the request schema, a fast exact predictor and the BentoML service.

``stages/package.py`` builds the Bento from these modules; ``service.py`` is
the module BentoML imports inside the Bento. Nothing here imports bentoml at
import time except ``service.py`` itself.
"""

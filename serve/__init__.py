"""serve: the REST service that classifies tiles with exactly the model ``dvc.lock`` pins.

Start it with ``uvicorn serve.app:create_app --factory``. The package imports the core library
(``satpipe``) and never ``stages``: the routes call the same predict functions as batch inference.
"""

"""Run configs: each module's ``get_config()`` returns a locked ``ml_collections.ConfigDict``.

``train.py --config configs/NAME.py`` loads one by path; code and tests import them as ``configs.NAME`` (the
repository root on ``sys.path``), and the config files build on each other the same way (``from configs import
default``).
"""

"""People's judgements: collected in a web page (`page`), the pairs worth asking chosen from
what is known so far (`pairs`), and the answers scaled into scores (`thurstone`).

NumPy and SciPy only at import (the page imports Starlette when it is built): `rankiqa rate`
without a model starts in a second.
"""

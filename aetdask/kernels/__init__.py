"""Pure array functions (NumPy or CuPy in, same out).

Nothing here imports dask or xarray or touches files; every function takes
plain arrays and works out the array module from them.
"""

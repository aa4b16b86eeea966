"""Files: output folders, the inversion cache, real pictures, PNG metadata, interrupts around writing."""


class FileWarning(UserWarning):
    """Something about a file that does not stop the run (a damaged cache entry, a cache that cannot be written);
    the command line shows it as a `warning:` line, the library as a Python warning."""

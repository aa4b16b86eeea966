"""Files: output folders, the inversion cache, real pictures, PNG metadata, interrupts around writing."""

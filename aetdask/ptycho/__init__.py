"""Ptychographic AET (pAET): 4D-STEM tilt series, per-tilt ptychographic phase images, the AET chain."""

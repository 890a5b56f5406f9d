"""Sources of Sentinel-1/2 acquisitions; each turns (grid, year) into `Granule`s."""

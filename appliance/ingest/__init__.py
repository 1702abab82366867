"""Ways work enters the appliance besides HTTP: the hot folder."""

"""HTTP routes: thin handlers that validate, call one service method and map to a response model."""

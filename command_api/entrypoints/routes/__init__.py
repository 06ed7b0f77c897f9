"""HTTP routes, one module per audience: users, operators, YooKassa, whoever runs the service."""

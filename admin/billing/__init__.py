"""The billing app of the admin: read-model pages, the account timeline and operator actions."""

"""Who the caller is and what they may see, for every door: identity models, OAuth2/SMART,
the access context, the role rules that know no FHIR, and the one audited endpoint."""

"""What the API and the consumer share: settings, the database, the event contract, and the
tables with their rules, one module per aggregate. It imports neither `service` nor `consumers`."""

"""The Kafka side: the consumer-group member that applies events to the tables (through `core`),
its offsets and fencing, dead letters, probes, and the topics it reads."""

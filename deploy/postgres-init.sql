-- One database per service: each owns its schema and migrations.
CREATE DATABASE intake OWNER switchboard;
CREATE DATABASE router OWNER switchboard;
CREATE DATABASE callback OWNER switchboard;

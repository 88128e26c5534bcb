-- Runs once, when the postgres container initialises an empty data directory, as the owner
-- (POSTGRES_USER=mlfn). Grafana reads through this SELECT-only role; the service creates its
-- tables later, as mlfn, and the default privileges below cover them.
CREATE ROLE grafana_reader LOGIN PASSWORD 'grafana_reader';
GRANT CONNECT ON DATABASE mlfn TO grafana_reader;
GRANT USAGE ON SCHEMA public TO grafana_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO grafana_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE mlfn IN SCHEMA public GRANT SELECT ON TABLES TO grafana_reader;

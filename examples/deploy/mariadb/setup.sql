-- The database and user of manifests/MANIFEST.game.json (Object.db_mysql_*). Change the
-- password here and in the manifest. Servers make their tables themselves at start.
CREATE DATABASE IF NOT EXISTS sandtable_game;
CREATE USER IF NOT EXISTS 'sandtable'@'10.20.0.%' IDENTIFIED BY 'change-me';
GRANT ALL PRIVILEGES ON sandtable_game.* TO 'sandtable'@'10.20.0.%';
FLUSH PRIVILEGES;

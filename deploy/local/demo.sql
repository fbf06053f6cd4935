-- Demo schema for the local quickstart (run through pg-router by up.sh).
CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL, country text);
CREATE TABLE orders (id bigint NOT NULL, user_id bigint NOT NULL, amount numeric(12,2),
                     PRIMARY KEY (user_id, id));
CREATE TABLE countries (code text PRIMARY KEY, name text NOT NULL);
INSERT INTO countries (code, name) VALUES ('de', 'Germany'), ('fr', 'France'), ('us', 'United States');
INSERT INTO users (id, name, country)
VALUES (1, 'ada', 'de'), (2, 'bob', 'fr'), (3, 'cy', 'us'), (4, 'dee', 'de'), (5, 'eve', 'us'),
       (6, 'fay', 'fr'), (7, 'gus', 'de'), (8, 'hal', 'us');
INSERT INTO orders (id, user_id, amount)
VALUES (1, 1, 10.00), (2, 1, 25.50), (3, 2, 7.25), (4, 3, 99.99), (5, 4, 12.00), (6, 5, 3.10),
       (7, 6, 45.00), (8, 7, 8.80), (9, 7, 15.00), (10, 8, 60.00);

-- Messages whose send was refused, though their record may have reached
-- the message log (a broker that hung, then took it): the archiver keeps
-- them out of history.
CREATE TABLE withdrawn_messages (
    id BIGINT PRIMARY KEY
);

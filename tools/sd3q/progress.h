/*
 * progress.h — progress display for long commands: a bar with steps/s and ETA on a terminal, one plain line per step
 * otherwise (logs, CI).
 */
#ifndef SD3Q_TOOLS_PROGRESS_H
#define SD3Q_TOOLS_PROGRESS_H

struct progress {
    const char * what;
    const char * unit;                // "steps" unless set after progress_begin
    int          total, item, items;  // item/items: "image 2/4" when items > 1
    int          tty;
    double       t0;
};

// Starts a display of `total` units.
void progress_begin(struct progress * p, const char * what, int total, int item, int items);

// Shows `done` of `total`; suitable as an sd3q_progress_fn (user_data = the progress). Returns 0 (never aborts).
int progress_callback(void * user_data, int done, int total);

// Ends the display (newline on a terminal).
void progress_end(struct progress * p);

#endif

-- Post lists are newest first (the seed's getPostsWithFiles and getRecentPosts). Without these, every
-- page reads and sorts all matching posts; with them, a page walks the index and stops.
-- Measured with bench/post_listing.py (README § Accounts and posts).
CREATE INDEX idx_posts_recent ON posts (created_at DESC, id DESC);
CREATE INDEX idx_posts_author_recent ON posts (author_id, created_at DESC, id DESC);

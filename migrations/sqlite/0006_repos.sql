-- Repository sessions (SPEC section 8): the branch the work goes on is `branch`; these
-- record where it started (the base branch and commit), the last commit pushed to it,
-- and the pull request opened for it.
ALTER TABLE sessions ADD COLUMN base_branch TEXT;
ALTER TABLE sessions ADD COLUMN base_commit TEXT;
ALTER TABLE sessions ADD COLUMN pushed_commit TEXT;
ALTER TABLE sessions ADD COLUMN pr_url TEXT;

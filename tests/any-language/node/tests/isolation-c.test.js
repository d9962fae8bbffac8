require('../lib/isolation')('c', 3)
